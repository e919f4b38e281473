"""`echo`: returns its inputs; used by OGC API - Processes conformance suites and
to measure the job system itself (queue latency, throughput)."""

from __future__ import annotations

import time

from .base import CanopyProcess, JobContext, Outcome

PROCESS_METADATA = {
    "version": "1.0.0",
    "id": "echo",
    "title": "Echo",
    "description": "Returns its input message; optionally takes `delay` seconds, reporting progress.",
    "jobControlOptions": ["sync-execute", "async-execute", "dismiss"],
    "keywords": ["test"],
    "inputs": {
        "message": {"title": "Message", "description": "Text to return", "minOccurs": 1, "maxOccurs": 1,
                    "schema": {"type": "string", "maxLength": 10000}},
        "delay": {"title": "Delay", "description": "Seconds to take (for tests of progress and dismissal)",
                  "minOccurs": 0, "maxOccurs": 1,
                  "schema": {"type": "number", "minimum": 0, "maximum": 600, "default": 0}},
    },
    "outputs": {
        "echo": {"title": "Echo", "description": "The message", "schema": {"type": "string"}},
    },
    "example": {"inputs": {"message": "hello"}},
}


class EchoProcessor(CanopyProcess):
    sync = True

    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)

    def run(self, inputs: dict, ctx: JobContext) -> Outcome:
        delay = float(inputs.get("delay", 0))
        steps = max(1, int(delay * 10))
        for i in range(steps):
            if delay:
                time.sleep(delay / steps)
            ctx.progress(100 * (i + 1) / steps, f"echo step {i + 1}/{steps}")
        return Outcome(outputs={"echo": inputs["message"]})
