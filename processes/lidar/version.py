"""The engine's version, recorded with every run (runs.engine_version) so that a product
can be traced to the code that made it. Kept equal to the package version (pyproject.toml);
raise it whenever a change alters what the engine outputs for the same inputs."""

ENGINE_VERSION = "0.1.0"
