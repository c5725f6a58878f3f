"""Reading back what plotly wrote into an HTML file (shared by the report tests)."""

import base64
import json
import re

import numpy as np


def plotly_figure(path):
    """The figure JSON that plotly wrote into an HTML file."""
    text = path.read_text(encoding="utf-8")
    payload = re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{", text, re.S)
    return json.loads(payload.group(1)), json.loads(payload.group(2))


def plotly_array(values):
    """A trace's x or y as floats: plotly writes numpy arrays as base64 typed arrays."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).astype(float)
    return np.array([np.nan if v is None else v for v in values], dtype=float)
