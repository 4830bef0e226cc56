"""Tables (pandas), plots and Markdown/CSV/HTML reports from simulator and RTL results."""
