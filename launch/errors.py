"""User errors: bad flags, names, files. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    pass
