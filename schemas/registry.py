"""Every artifact schema by its name (its module's name), for tools that take any artifact."""

from schemas.candidates import Candidates
from schemas.evaluation import EvaluationRows
from schemas.feedback import Feedback
from schemas.filtered import Filtered
from schemas.judgements import Judgements
from schemas.meta_corpus import MetaCorpus
from schemas.pairs import PreferencePairs
from schemas.prompts import Prompts
from schemas.quarantine import Quarantine
from schemas.refinements import Refinements
from schemas.sft import SFTRecords

# artifact name (its module) -> schema
ARTIFACTS = {
    "prompts": Prompts,
    "meta_corpus": MetaCorpus,
    "candidates": Candidates,
    "feedback": Feedback,
    "refinements": Refinements,
    "filtered": Filtered,
    "sft": SFTRecords,
    "pairs": PreferencePairs,
    "evaluation": EvaluationRows,
    "judgements": Judgements,
    "quarantine": Quarantine,
}

__all__ = [
    "ARTIFACTS",
        "Candidates",
    "EvaluationRows",
    "Feedback",
    "Filtered",
    "Judgements",
    "MetaCorpus",
    "PreferencePairs",
    "Prompts",
    "Quarantine",
    "Refinements",
    "SFTRecords",
]
