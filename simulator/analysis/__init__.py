"""Analysis: AnalysisTemplates and runs, the condition language and the `web` and `job` providers."""
