"""lowbit: hardware co-design for extremely low-bit transformers (command-line front end)."""
