"""The pipeline's events: types, topics and payload models, defined once.

Every stage node, the in-process runner and the client use these. Topics and event types
come from the template's ``runtime/naming.py`` (``onex_scaffold.naming``),
the same functions every node uses for its own topics:

- a compute stage consumes its command topic and its runtime publishes the result on its
  ``completed`` topic (that is how compute nodes work: a pure function, no I/O);
- an effect stage subscribes to the previous compute stage's ``completed`` topic and
  publishes onto the next compute stage's command topic (or the pipeline's own topics).

The request id is the correlation id of every event; the record key is the request id too,
so all events of one request stay in order on one partition.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from onex_scaffold import PipelineStage, naming

#: Domain of the stage nodes and of the pipeline's own event types.
DOMAIN: Final = "generation"

StageName = Literal[
    "prd_analyzer",
    "intelligence_gatherer",
    "contract_builder",
    "code_generator",
    "validator",
    "code_refiner",
    "file_writer",
]


@dataclass(frozen=True)
class StageNode:
    """One stage node: its stage name, Copier answers and where it lives in ``nodes/``."""

    stage: StageName
    node_name: str
    node_type: Literal["compute", "effect"]
    service_name: str

    @property
    def class_name(self) -> str:
        return str(naming().class_name(self.node_name, self.node_type))

    @property
    def folder(self) -> str:
        return self.service_name


#: The seven stage nodes in pipeline order (names from the design document).
STAGE_NODES: Final[tuple[StageNode, ...]] = (
    StageNode("prd_analyzer", "PRDAnalyzer", "compute", "prd-analyzer"),
    StageNode("intelligence_gatherer", "IntelligenceGatherer", "effect", "intelligence-gatherer"),
    StageNode("contract_builder", "ContractBuilder", "compute", "contract-builder"),
    StageNode("code_generator", "CodeGenerator", "effect", "code-generator"),
    StageNode("validator", "Validator", "compute", "validator"),
    StageNode("code_refiner", "CodeRefiner", "effect", "code-refiner"),
    StageNode("file_writer", "FileWriter", "effect", "file-writer"),
)
STAGE_BY_NAME: Final = {node.stage: node for node in STAGE_NODES}

# ---------------------------------------------------------------------------
# Event types and topics
# ---------------------------------------------------------------------------

NODE_GENERATION_REQUESTED: Final = "NODE_GENERATION_REQUESTED"
PRD_ANALYZED: Final = "PRD_ANALYZED"
INTELLIGENCE_GATHERED: Final = "INTELLIGENCE_GATHERED"
CONTRACT_BUILT: Final = "CONTRACT_BUILT"
CODE_GENERATED: Final = "CODE_GENERATED"
VALIDATION_COMPLETED: Final = "VALIDATION_COMPLETED"
CODE_REFINED: Final = "CODE_REFINED"
NODE_GENERATION_COMPLETED: Final = "NODE_GENERATION_COMPLETED"
NODE_GENERATION_FAILED: Final = "NODE_GENERATION_FAILED"

EVENTS: Final = (
    NODE_GENERATION_REQUESTED,
    PRD_ANALYZED,
    INTELLIGENCE_GATHERED,
    CONTRACT_BUILT,
    CODE_GENERATED,
    VALIDATION_COMPLETED,
    CODE_REFINED,
    NODE_GENERATION_COMPLETED,
    NODE_GENERATION_FAILED,
)


def _service(stage: StageName) -> str:
    return STAGE_BY_NAME[stage].service_name


def event_type(event: str) -> str:
    """The envelope ``event_type`` of a pipeline event.

    Events a compute stage's runtime publishes carry that node's ``completed`` type
    (``naming.node_event_type``); the others are the pipeline's own, built the same way.
    """
    n = naming()
    produced_by_compute: dict[str, StageName] = {
        PRD_ANALYZED: "prd_analyzer",
        CONTRACT_BUILT: "contract_builder",
        VALIDATION_COMPLETED: "validator",
    }
    if event in produced_by_compute:
        return str(n.node_event_type(DOMAIN, _service(produced_by_compute[event]), "completed"))
    if event == NODE_GENERATION_REQUESTED:
        return str(n.command_event_type(DOMAIN, "node-generation"))
    if event not in EVENTS:
        raise KeyError(f"unknown pipeline event {event!r}; known: {', '.join(EVENTS)}")
    return f"omninode.{DOMAIN}.event.{n.snake_case(event)}.v1"


def event_topic(event: str, environment: str) -> str:
    """The topic a pipeline event travels on."""
    n = naming()
    match event:
        case "NODE_GENERATION_REQUESTED":
            return str(n.command_topic(environment, _service("prd_analyzer")))
        case "PRD_ANALYZED":
            return str(n.node_event_topic(environment, _service("prd_analyzer"), "completed"))
        case "INTELLIGENCE_GATHERED":
            return str(n.command_topic(environment, _service("contract_builder")))
        case "CONTRACT_BUILT":
            return str(n.node_event_topic(environment, _service("contract_builder"), "completed"))
        case "CODE_GENERATED" | "CODE_REFINED":
            return str(n.command_topic(environment, _service("validator")))
        case "VALIDATION_COMPLETED":
            return str(n.node_event_topic(environment, _service("validator"), "completed"))
        case "NODE_GENERATION_COMPLETED" | "NODE_GENERATION_FAILED":
            return str(n.topic(environment, "evt", event.lower().replace("_", "-")))
    raise KeyError(f"unknown pipeline event {event!r}; known: {', '.join(EVENTS)}")


def compute_failed_topics(environment: str) -> dict[str, StageName]:
    """The ``failed`` topics of the compute stages' runtimes (a handler that raised)."""
    n = naming()
    return {
        str(n.node_event_topic(environment, node.service_name, "failed")): node.stage
        for node in STAGE_NODES
        if node.node_type == "compute"
    }


def pipeline_topics(environment: str) -> list[str]:
    """Every topic of the pipeline (created with enough partitions before anyone subscribes)."""
    topics = {event_topic(event, environment) for event in EVENTS}
    topics.update(compute_failed_topics(environment))
    return sorted(topics)


def input_topic(stage: StageName, environment: str) -> str:
    """The topic a stage consumes."""
    consumes = {
        "prd_analyzer": NODE_GENERATION_REQUESTED,
        "intelligence_gatherer": PRD_ANALYZED,
        "contract_builder": INTELLIGENCE_GATHERED,
        "code_generator": CONTRACT_BUILT,
        "validator": CODE_GENERATED,
        "code_refiner": VALIDATION_COMPLETED,
        "file_writer": VALIDATION_COMPLETED,
    }
    return event_topic(consumes[stage], environment)


# ---------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------


class _Model(BaseModel):
    # Unknown fields are ignored, not refused: during a rolling upgrade stages of the old and
    # the new version share the topics, and a field added later (with a default) must not
    # dead-letter the events of a request in flight. Every known field is still validated.
    model_config = ConfigDict(extra="ignore", frozen=True)


#: Longest PRD accepted (characters).
MAX_PRD_CHARS: Final = 200_000


class NodeArchive(_Model):
    """A rendered node: a gzip-compressed tar, base64, with the digest of its files."""

    format: Literal["tar.gz"] = "tar.gz"
    data: str = Field(description="base64 of the tar.gz")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="tree digest of the files")
    files: int = Field(ge=0)
    size: int = Field(ge=0, description="bytes of the tar.gz")


class PipelineRequest(_Model):
    """What the client asked for; every event carries it on."""

    request_id: uuid.UUID
    prd: str = Field(max_length=MAX_PRD_CHARS)
    prd_name: str | None = Field(default=None, max_length=255)
    output_directory: str = Field(min_length=1, max_length=4096)
    template: str | None = None
    vcs_ref: str | None = None
    #: The node already in ``output_directory`` (update mode), packed by the client.
    existing: NodeArchive | None = None
    validation: Literal["full", "fast"] = "full"
    max_refine_rounds: int = Field(default=2, ge=0, le=5)
    #: Everything but the writing: the writer reports the files it would change.
    dry_run: bool = False


class ProblemModel(_Model):
    field: str
    rule: str
    value: str | None = None


class Finding(_Model):
    gate: str
    message: str
    file: str | None = None
    line: int | None = None
    code: str | None = None
    fixable: bool = False


_Next = TypeVar("_Next", bound="_Payload")


class _Payload(_Model):
    request: PipelineRequest
    stages: list[PipelineStage] = Field(default_factory=list)

    def follow(self, into: type[_Next], finished: PipelineStage, **fields: Any) -> _Next:
        """The next event of this request: ``into`` with every field it shares with this
        payload carried on, the stage just ``finished`` appended to ``stages``, and ``fields``
        (new or changed values) on top."""
        carried = {
            name: getattr(self, name)
            for name in into.model_fields
            if name != "kind" and name in type(self).model_fields
        }
        return into(**{**carried, "stages": [*self.stages, finished], **fields})


class NodeGenerationRequested(_Payload):
    kind: Literal["node_generation_requested"] = "node_generation_requested"


PrdFormat = Literal["parsed_data", "markdown", "prose"]
NodeMode = Literal["create", "update", "regenerate"]


class _Analysis(_Payload):
    """What the PRD analyzer found; carried on until the contract is built."""

    parsed_data: dict[str, Any]
    generation_result: dict[str, Any] = Field(default_factory=dict)
    extra_answers: dict[str, Any] = Field(default_factory=dict)


class PrdAnalyzed(_Analysis):
    kind: Literal["prd_analyzed"] = "prd_analyzed"
    prd_format: PrdFormat


class Intelligence(_Model):
    consul: Literal["ok", "unavailable", "not_configured"]
    mode: Literal["create", "update"]
    existing_version: str | None = None
    suggested_version: str | None = None
    same_service: list[dict[str, str]] = Field(default_factory=list)
    same_domain: list[dict[str, str]] = Field(default_factory=list)
    name_clashes: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class IntelligenceGathered(_Analysis):
    kind: Literal["intelligence_gathered"] = "intelligence_gathered"
    prd_format: PrdFormat
    intelligence: Intelligence


class ContractBuilt(_Analysis):
    kind: Literal["contract_built"] = "contract_built"
    answers: dict[str, Any]
    contract: dict[str, Any]


class _RenderedNode(_Payload):
    """A rendered node on its way through validation and refinement."""

    answers: dict[str, Any]
    contract: dict[str, Any]
    archive: NodeArchive
    mode: NodeMode
    changed_files: list[str] = Field(default_factory=list)
    round: int = 0


class CodeGenerated(_RenderedNode):
    kind: Literal["code_generated"] = "code_generated"


class CodeRefined(_RenderedNode):
    kind: Literal["code_refined"] = "code_refined"
    round: int = Field(ge=1)
    fixes: list[str] = Field(default_factory=list)


class ValidationCompleted(_RenderedNode):
    kind: Literal["validation_completed"] = "validation_completed"
    passed: bool
    score: float = Field(ge=0, le=100)
    findings: list[Finding] = Field(default_factory=list)
    fixable: bool = False


class NodeGenerationCompleted(_Payload):
    kind: Literal["node_generation_completed"] = "node_generation_completed"
    output_path: str
    node_name: str
    service_name: str
    node_type: str
    mode: NodeMode
    files: int
    changed_files: list[str] = Field(default_factory=list)
    sha256: str
    score: float


class NodeGenerationFailed(_Payload):
    kind: Literal["node_generation_failed"] = "node_generation_failed"
    stage: str
    reason: str
    problems: list[ProblemModel] = Field(default_factory=list)
    #: True when the PRD itself was refused (the CLI exits 2).
    invalid_input: bool = False


PipelinePayload = Annotated[
    NodeGenerationRequested
    | PrdAnalyzed
    | IntelligenceGathered
    | ContractBuilt
    | CodeGenerated
    | CodeRefined
    | ValidationCompleted
    | NodeGenerationCompleted
    | NodeGenerationFailed,
    Field(discriminator="kind"),
]

#: Payload kind -> pipeline event name.
EVENT_OF_KIND: Final = {
    "node_generation_requested": NODE_GENERATION_REQUESTED,
    "prd_analyzed": PRD_ANALYZED,
    "intelligence_gathered": INTELLIGENCE_GATHERED,
    "contract_built": CONTRACT_BUILT,
    "code_generated": CODE_GENERATED,
    "code_refined": CODE_REFINED,
    "validation_completed": VALIDATION_COMPLETED,
    "node_generation_completed": NODE_GENERATION_COMPLETED,
    "node_generation_failed": NODE_GENERATION_FAILED,
}


@cache
def _adapter() -> TypeAdapter[Any]:
    return TypeAdapter(PipelinePayload)


def parse_payload(data: object) -> Any:
    """Any pipeline payload from its JSON-able dict (``kind`` picks the model);
    raises ``pydantic.ValidationError`` for anything else."""
    return _adapter().validate_python(data)


def dump(payload: BaseModel) -> dict[str, Any]:
    return payload.model_dump(mode="json")


def dedup_key(payload: Any) -> tuple[str, int]:
    """Events of one request that are the same step: (kind, refine round)."""
    return (str(payload.kind), int(getattr(payload, "round", 0)))
