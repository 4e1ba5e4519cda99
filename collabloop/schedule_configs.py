"""How simulated conversations are scheduled, and how fast remote calls may go: mixed into the stage configs
(collabloop/stage_configs.py), declared here so that module stays readable."""

from __future__ import annotations

from dataclasses import dataclass

from collabloop.config_error import ConfigError, _help, at_least

SCHEDULES = ("auto", "per_conversation", "turn_synchronous")


@dataclass
class RateLimitArgs:
    llm_max_requests_per_minute: float = _help(
        "Most simulator/judge calls started in any 60 s (an API's requests-per-minute limit); 0: no limit. "
        "Calls past it wait; they are not failures.",
        default=0.0,
    )
    llm_max_tokens_per_minute: float = _help(
        "Most simulator/judge tokens (the prompt's, estimated at 4 characters a token, plus max_tokens) sent in "
        "any 60 s (an API's tokens-per-minute limit); 0: no limit. Calls past it wait.",
        default=0.0,
    )

    def _check_rate_limits(self) -> None:
        at_least(self, 0, "llm_max_requests_per_minute", "llm_max_tokens_per_minute")


@dataclass
class ScheduleArgs:
    simulation_schedule: str = _help(
        "How simulated conversations advance. 'per_conversation': each conversation's next turn goes to its "
        "model as soon as its last one ends, so user and assistant turns of different conversations run "
        "together and no turn waits for the batch's longest reply. 'turn_synchronous': all user turns, then all "
        "assistant turns, turn by turn. 'auto': per_conversation where reruns keep their text (the policy and a "
        "'local/<dir>' simulator both in the stage's process), else turn_synchronous. With a remote simulator, "
        "per_conversation overlaps its calls with the policy's turns, but a rerun's text may differ (README, "
        "'How simulated conversations are scheduled').",
        default="auto",
    )

    def _check_schedule(self) -> None:
        if self.simulation_schedule not in SCHEDULES:
            raise ConfigError(
                f"simulation_schedule must be one of {list(SCHEDULES)}, got {self.simulation_schedule!r}")
