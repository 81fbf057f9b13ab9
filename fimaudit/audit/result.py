"""The result of an audit: its rows, summary, settings, most sensitive inputs, provenance and
warnings; saved as results.json, results.csv and report.html (:mod:`fimaudit.audit.files`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SCHEMA = "fimaudit.audit/1"


@dataclass
class Audit:
    rows: list
    summary: dict
    settings: dict
    top: list = field(default_factory=list)  # most sensitive inputs: index, λ, input, direction
    input_shape: tuple = ()
    provenance: dict = field(default_factory=dict)  # versions, time, identities, settings
    warnings: list = field(default_factory=list)  # [{category, message, count}] raised during the run

    @property
    def lambda_max(self):
        return np.array([r["lambda_max"] if r["lambda_max"] is not None else np.nan for r in self.rows])

    def to_dict(self):
        return dict(
            schema=SCHEMA,
            settings=self.settings,
            input_shape=list(self.input_shape),
            summary=self.summary,
            top=self.top,
            rows=self.rows,
            provenance=self.provenance,
            warnings=self.warnings,
        )

    def save(self, out):
        """Write results.json, results.csv and report.html into the folder ``out``."""
        from .files import save

        return save(self, out)

    @classmethod
    def load(cls, folder):
        """The audit saved in ``folder`` (its results.json, checked; see :mod:`fimaudit.audit.files`)."""
        from .files import load

        data = load(folder, SCHEMA)
        return cls(**{**data, "input_shape": tuple(data["input_shape"])})
