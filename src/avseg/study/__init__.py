"""The paper's claims, tested: Table-2 rows x seeds on the synthetic benchmark (docs/study.md)."""
