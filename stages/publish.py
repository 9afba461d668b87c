"""publish@<name>: push what `publish.<name>` lists to the Hugging Face Hub, as `honing
publish` does by hand: a dataset repo per list of artifacts, a model repo per
checkpoint, cards with provenance, lineage in publish.lock.json. An unchanged repo
gets no commit. Inside `dvc repro` the artifacts are fresh (the stage depends on
data/), so `dvc status` is not asked again. The token is $HF_TOKEN.

    publish:
      hub:                                   # the stage publish@hub
        private: true
        repos:                               # repo id -> what it holds, parents first or not:
          me/honing-base: [model@base]       #   they are ordered by the DAG
          me/honing-meta: [meta_corpus, sft@train_meta]
"""

from honing.publish.lineage import LOCK_NAME, PublishLock
from honing.publish.project import Project
from honing.publish.push import Options, hub_api, publish_all, token_from_env
from schemas.registry import ARTIFACTS
from stages._outputs import write_metrics
from stages._params import StageError, load_params, main

STAGE = "publish"
KEYS = {"repos", "license", "private", "endpoint", "timeout_s", "attempts"}


def run(argv: list[str]) -> None:
    (name,) = argv
    params = load_params(STAGE, name)
    block = dict(params[STAGE][name] or {})
    unknown = sorted(set(block) - KEYS)
    if unknown:
        raise StageError(f"params.yaml `publish.{name}`: unknown key(s) {', '.join(unknown)}; "
                         f"expected some of {', '.join(sorted(KEYS))}")
    repos = block.pop("repos", None) or {}
    if not isinstance(repos, dict) or not all(isinstance(v, list) and v for v in repos.values()):
        raise StageError(f"params.yaml `publish.{name}.repos`: expected a mapping of repo id -> a list of "
                         "artifacts (e.g. me/honing-it1: [sft@it1, pairs@it1])")
    options = Options(**block, check_stale=False)
    token = token_from_env()
    project = Project(".", checkpoints=params.get("checkpoints"))
    lock = PublishLock(LOCK_NAME)
    outcomes = publish_all(project, lock, ARTIFACTS, list(repos.items()), hub_api(options.endpoint, token), options)
    for o in outcomes:
        print(f"{o.plan.repo_type} repo {o.plan.repo_id}: "
              f"{'pushed ' + ', '.join(o.pushed) if o.pushed else 'unchanged'}; revision {o.revision}")
    write_metrics(f"metrics/{STAGE}/{name}.json", {"repos": {
        o.plan.repo_id: {"type": o.plan.repo_type, "revision": o.revision, "pushed": o.pushed,
                         "items": {item["name"]: item["md5"] for item in o.plan.items.values()}}
        for o in outcomes}})


if __name__ == "__main__":
    main(run)
