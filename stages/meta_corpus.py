"""meta_corpus: the base policy answers the meta prompts; the strong critic writes
feedback and a refinement for each answer."""

from honing.io import read_artifact, write_artifact
from honing.meta_corpus import MetaCorpusConfig, build_meta_corpus
from honing.prompts import PromptSet
from honing.stage import (
    critic_metrics,
    load_params,
    main,
    make_role,
    make_stage_critic,
    stage_params,
    to_config,
    write_metrics,
)
from schemas.meta_corpus import MetaCorpus
from schemas.prompts import Prompts
from schemas.quarantine import Quarantine


def run(argv: list[str]) -> None:
    params = load_params()
    cfg = to_config(MetaCorpusConfig, stage_params("meta_corpus", params=params), "meta_corpus")
    templates = PromptSet(params["templates"])
    prompts = read_artifact("data/prepare/meta.parquet", Prompts)
    policy = make_role("policy", params, model="data/base/model")
    critic = make_stage_critic(params, params["critic"], policy)
    corpus, quarantine = build_meta_corpus(prompts, policy, critic, templates, cfg)
    write_artifact(corpus, "data/meta_corpus/corpus.parquet", MetaCorpus)
    write_artifact(quarantine, "data/meta_corpus/quarantine.parquet", Quarantine, id_column=None)
    counts = corpus.group_by("response_source", "verdict").len().sort("response_source", "verdict")
    write_metrics("metrics/meta_corpus.json", {
        "rows": corpus.height,
        "quarantined_unparseable_feedback": quarantine.height,
        "by_source_and_verdict": {f"{s}/{v}": n for s, v, n in counts.iter_rows()},
        "policy_calls": policy.metrics(),
        **critic_metrics(critic, policy),
        "critic": critic.name,
    })


if __name__ == "__main__":
    main(run)
