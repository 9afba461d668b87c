"""critique@<iteration>: feedback on every candidate; by default self-feedback from
the iteration's own model. Unparseable feedback is kept with its reason."""


from honing.artifacts.io import read_artifact, write_artifact
from honing.method.critique import feedback_frame
from schemas.candidates import Candidates
from schemas.feedback import Feedback
from schemas.prompts import Prompts
from stages._critics import feedback_plan, make_stage_critic
from stages._models import call_figures, make_role
from stages._outputs import write_metrics
from stages._params import iteration_init, load_params, main, stage_block
from stages._tasks import stage_tasks

STAGE = "critique"


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params(STAGE, iteration)
    block = stage_block(params, STAGE, iteration)
    critic_spec = block.get("critic", {"backend": "self"})
    candidates = read_artifact(f"data/{iteration}/generate/candidates.parquet", Candidates)
    prompts = read_artifact("data/prepare/train.parquet", Prompts)
    tasks = stage_tasks(prompts, candidates["prompt_id"])
    plan = feedback_plan(params, critic_spec, tasks)
    name = f"{STAGE}@{iteration}"
    policy = make_role("policy", params, stage=name, model=iteration_init(params, iteration))
    critic = make_stage_critic(params, critic_spec, policy, stage=name, plan=plan,
                               max_tokens=block.get("max_tokens", 256))
    feedback = feedback_frame(candidates, critic, iteration)
    write_artifact(feedback, f"data/{iteration}/critique/feedback.parquet", Feedback)
    verdicts = dict(feedback.group_by("verdict").len().sort("verdict").iter_rows())
    calls, runtime = call_figures(policy, critic)
    write_metrics(f"metrics/{iteration}/critique.json",
                  {"rows": feedback.height, "verdicts": verdicts, "critic": critic.name, **calls}, runtime)


if __name__ == "__main__":
    main(run)
