"""Studies: grids of ordinary training runs on Ray Tune (launch/study.py is the command).

    spec.py     the study file: read, checked, expanded into trials (each one train.py command)
    trial.py    one trial: Tune's trainable, which trains (or resumes) one run directory
    driver.py   a session of a study on Tune: scheduling, retries, trials.jsonl, the progress line
    results.py  a study directory's runs, grouped by the grid's axes, for launch/report.py
"""
