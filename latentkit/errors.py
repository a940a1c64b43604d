"""The one exception type for user-facing failures.

Anything raised as :class:`LatentkitError` is a problem with the user's input (a missing file, a corrupt
`.latent`, an unknown config name...). The CLI prints its message on one line and exits with status 2.
Any other exception is a bug in latentkit and may show a traceback.
"""


class LatentkitError(Exception):
    """A user-facing error whose message is one line that says what went wrong and what to do."""
