"""Test-session settings shared by tests/ and rtl_tests/."""

import os

# No model or dataset downloads at run time: anything that would reach the Hugging Face Hub fails instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
