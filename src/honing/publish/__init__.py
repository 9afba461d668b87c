"""Publishing: pipeline artifacts as 🤗 dataset repos, checkpoints as model repos,
each with a card that says where it came from and links the repos around it.

    project   the DVC project as published: artifact names and paths, dvc.lock
              (stages, md5s, params), metrics, git, `dvc status`; who generated what
    lineage   publish.lock.json: which repo and revision holds which artifact, and
              the links between checkpoints and datasets both ways
    cards     the dataset card and the model card (YAML metadata and a body to read)
    push      the repo folder, the dry run, the comparison with the Hub and the commit

`honing publish` (honing.cli) and the optional `publish` stage both call
`push.publish`; the stage runs inside `dvc repro`, which has already made the
artifacts fresh.
"""

from honing.errors import HoningError


class PublishError(HoningError, ValueError):
    """A publish that stopped before sending anything (or whose push failed): one line."""
