"""A stage of one's own reaching every process of a run: the run YAML names this module in loop.plugins, and
it registers tests/test_stage_specs.py's short_contexts stage after contexts."""

from collabloop import pipeline
from tests.test_stage_specs import SHORT_CONTEXTS

pipeline.register_stage(SHORT_CONTEXTS, after="contexts")
