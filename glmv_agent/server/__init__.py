"""An OpenAI-compatible HTTP server over the in-process GLM-4.1V engine (FastAPI + uvicorn).

`glmv-agent serve --model PATH` exposes `POST /v1/chat/completions` (streaming or not),
`GET /v1/models`, `GET /v1/models/{id}` and `GET /health`, so the `openai` client,
Midscene.js or our own `OpenAIBackend` can use a local GLM-4.1V. It follows vLLM's
extensions that GUI agents rely on: `skip_special_tokens` (default true; agents pass false
to keep `<|begin_of_box|>`), `chat_template_kwargs.enable_thinking` (or GLM's
`thinking: {"type": "enabled"|"disabled"}`), `top_k`, `repetition_penalty`, `frequency_penalty`,
`presence_penalty`.

    config.py     the operator's limits and policies (checked before any weights load)
    protocol.py   the wire format: request validation, rejected fields, answers
    images.py     data URLs, and remote images only when allowed and only from public hosts
    scheduler.py  admission (503 beyond --max-queue) and batching of concurrent requests
    app.py        the FastAPI routes, API key, body limits, disconnect = cancel
    runner.py     uvicorn: the pre-bound socket, header timeout, JSON protocol errors

In code:

    sock = bind_socket("127.0.0.1", 8000)           # fails fast if the port is taken
    engine = load("model/GLM-4.1V-9B-Thinking")
    config = ServerConfig(model_name="glm-4.1v", api_key="secret")
    uvicorn_server(create_app(engine, config), config).run(sockets=[sock])
"""

from .app import create_app
from .config import ServerConfig, checkpoint_context_length
from .images import ImagePolicy, is_public_address
from .protocol import RequestError
from .runner import bind_socket, uvicorn_server

__all__ = ["create_app", "ServerConfig", "checkpoint_context_length", "ImagePolicy", "is_public_address",
           "RequestError", "bind_socket", "uvicorn_server"]
