"""Update policies of a deployment replay, registered by name in `POLICIES` (one module per
policy, imported here so that it registers itself)."""

from freshrec.replay.policies import edit, finetune, merge, retrain, static  # noqa: F401
from freshrec.replay.policies.base import (
    POLICIES,
    Combined,
    NoSettings,
    UpdatePolicy,
    make_policy,
    register_policy,
)

__all__ = ["POLICIES", "Combined", "NoSettings", "UpdatePolicy", "make_policy", "register_policy"]
