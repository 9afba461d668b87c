"""meta_corpus: the base policy answers the meta prompts; the strong critic writes
feedback and a refinement for each answer."""

from honing.artifacts.io import read_artifact, write_artifact
from honing.method.meta_corpus import NO_REFINEMENT, UNPARSEABLE, MetaCorpusConfig, build_meta_corpus
from honing.method.prompts import PromptSet
from schemas.meta_corpus import MetaCorpus
from schemas.prompts import Prompts
from schemas.quarantine import Quarantine
from stages._critics import feedback_plan, make_stage_critic
from stages._models import call_figures, make_role
from stages._outputs import write_metrics
from stages._params import load_params, main, stage_block, to_config
from stages._tasks import stage_tasks

STAGE = "meta_corpus"


def run(argv: list[str]) -> None:
    params = load_params(STAGE)
    cfg = to_config(MetaCorpusConfig, stage_block(params, STAGE), STAGE)
    templates = PromptSet(params["templates"])
    prompts = read_artifact("data/prepare/meta.parquet", Prompts)
    tasks = stage_tasks(prompts)
    plan = feedback_plan(params, params["critic"], tasks)
    policy = make_role("policy", params, stage=STAGE, model="data/base/model")
    critic = make_stage_critic(params, params["critic"], policy, stage=STAGE, plan=plan)
    corpus, quarantine = build_meta_corpus(prompts, policy, critic, templates, cfg, tasks=tasks)
    write_artifact(corpus, "data/meta_corpus/corpus.parquet", MetaCorpus)
    write_artifact(quarantine, "data/meta_corpus/quarantine.parquet", Quarantine, id_column=None)
    counts = corpus.group_by("response_source", "verdict").len().sort("response_source", "verdict")
    reasons = quarantine["reason"].to_list()
    calls, runtime = call_figures(policy, critic)
    write_metrics("metrics/meta_corpus.json", {
        "rows": corpus.height,
        "quarantined_unparseable_feedback": sum(r.startswith(UNPARSEABLE) for r in reasons),
        "dropped_no_refinement": sum(r.startswith(NO_REFINEMENT) for r in reasons),
        "by_source_and_verdict": {f"{s}/{v}": n for s, v, n in counts.iter_rows()},
        "critic": critic.name,
        **calls,
    }, runtime)


if __name__ == "__main__":
    main(run)
