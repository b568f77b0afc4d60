"""The base of the errors users are meant to read; the CLI prints them as one line, exit status 2."""


class RiffmaskError(ValueError):
    """Bad input or configuration, with a message that names the file or key and what to do."""


def hub_errors() -> tuple[type[Exception], ...]:
    """What the Hugging Face Hub client raises when the Hub is unreachable, offline or refuses a request:
    its HTTP transport's base error (that library changes between releases) and the Hub's own."""
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, HTTPError, OfflineModeIsEnabled

    return HTTPError, HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
