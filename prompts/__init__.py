"""The prompt templates, installed as the package `glmv_agent.prompts`.

They live in the repository's top-level `prompts/` folder so they are easy to find and
review; pyproject.toml maps the folder to this package, so the templates ship inside the
wheel and an editable install finds them too. Read them with
`glmv_agent.dialects._history.load_template("glm41v/web.txt")`.
"""
