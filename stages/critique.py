"""critique@<iteration>: feedback on every candidate; by default self-feedback from
the iteration's own model. Unparseable feedback is kept with its reason."""

from honing.critique import feedback_frame
from honing.io import read_artifact, write_artifact
from honing.stage import (
    critic_metrics,
    iteration_init,
    load_params,
    main,
    make_role,
    make_stage_critic,
    stage_params,
    write_metrics,
)
from schemas.candidates import Candidates
from schemas.feedback import Feedback


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params()
    block = stage_params("critique", iteration, params)
    candidates = read_artifact(f"data/{iteration}/generate/candidates.parquet", Candidates)
    policy = make_role("policy", params, model=iteration_init(params, iteration))
    critic = make_stage_critic(params, block.get("critic", {"backend": "self"}), policy,
                               max_tokens=block.get("max_tokens", 256))
    feedback = feedback_frame(candidates, critic, iteration)
    write_artifact(feedback, f"data/{iteration}/critique/feedback.parquet", Feedback)
    verdicts = dict(feedback.group_by("verdict").len().sort("verdict").iter_rows())
    write_metrics(f"metrics/{iteration}/critique.json", {
        "rows": feedback.height, "verdicts": verdicts, "critic": critic.name, **policy.metrics(),
        **critic_metrics(critic, policy),
    })


if __name__ == "__main__":
    main(run)
