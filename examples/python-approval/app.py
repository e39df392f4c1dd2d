"""An approval policy in Python.

Jobs in images off `plugin.images` are refused (the list is the bundle's
own; unset, any image may run), and jobs asking for more than
`plugin.askAboveTokens` tokens (default 100000) are put to the owner. Every
other job runs. The node's own rules (compliance.allowedModels and the
rest) are the host's to enforce, whatever this plugin answers.

Build it with componentize-py against the host's WIT:

    componentize-py -d ../../wit -w approval-policy componentize app -o approval.wasm
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.approval import Verdict_Allow, Verdict_Ask, Verdict_Deny
from wit_world.imports import settings

IMAGES = "plugin.images"
ASK_ABOVE = "plugin.askAboveTokens"
DEFAULT_ASK_ABOVE = 100_000


def images(raw):
    """The comma-separated list as repositories or references."""
    return [image.strip() for image in (raw or "").split(",") if image.strip()]


def repository(reference):
    """`registry:5000/team/agent:3` -> `registry:5000/team/agent`."""
    name = reference.split("@")[0]
    slash = name.rfind("/") + 1
    colon = name.rfind(":")
    return name[:colon] if colon >= slash else name


def ask_above(raw):
    if raw is None:
        return DEFAULT_ASK_ABOVE
    if not raw.isdigit():
        raise ValueError(f"{ASK_ABOVE} must be a whole number of tokens, not {raw!r}")
    return int(raw)


class ConfigCheck(exports.ConfigCheck):
    def validate_config(self, config):
        values = dict(config)
        try:
            ask_above(values.get(ASK_ABOVE))
        except ValueError as problem:
            raise Err([str(problem)])


class Approval(exports.Approval):
    def decide(self, job):
        # `job` is the host's: each method call fetches one field.
        allowed = images(settings.get(IMAGES))
        if allowed:
            reference = job.image().reference
            if reference not in allowed and repository(reference) not in allowed:
                return Verdict_Deny(
                    f"image {reference} is not one of {', '.join(allowed)} ({IMAGES})"
                )
        limit = ask_above(settings.get(ASK_ABOVE))
        tokens = job.budget().tokens
        if tokens > limit:
            return Verdict_Ask(
                f"job {job.id()} asks for {tokens} tokens, more than {limit} "
                f"({ASK_ABOVE}); run it?"
            )
        return Verdict_Allow()
