"""OpenAI and Anthropic wire types and stream builders.

Shared by Kingpost's engines and public for custom ``model.py`` authors, so a model
can answer in the right shape with one call::

    from kingpost.protocols import ChatCompletionStream, chat_completion

    class Model:
        async def chat_completions(self, inputs):
            return chat_completion(text="Hello!", model="my-model")

Request types validate with :func:`parse_request`, which raises
:class:`InvalidParameterError` (HTTP 400, naming the parameter) that renders itself in
either API's error shape.
"""

from kingpost.protocols.anthropic_messages import (
    Message,
    MessagesRequest,
    MessageStream,
    ToolUseBlock,
    message,
)
from kingpost.protocols.errors import (
    InvalidParameterError,
    anthropic_error,
    anthropic_stream_error,
    openai_error,
    openai_stream_error,
    parse_request,
)
from kingpost.protocols.ids import new_id
from kingpost.protocols.openai_chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionStream,
    FunctionCall,
    ToolCall,
    chat_completion,
)
from kingpost.protocols.openai_common import TokenLogprob, TopLogprob, Usage
from kingpost.protocols.openai_completions import (
    Completion,
    CompletionRequest,
    CompletionStream,
    completion,
)
from kingpost.protocols.openai_embeddings import EmbeddingList, EmbeddingRequest, embeddings
from kingpost.protocols.openai_responses import (
    OutputFunctionCall,
    ResponseObject,
    ResponsesRequest,
    ResponseStream,
    ResponseUsage,
    response_object,
)
from kingpost.protocols.sse import SSE_DONE, parse_sse, sse_event

__all__ = [
    "SSE_DONE",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionStream",
    "Completion",
    "CompletionRequest",
    "CompletionStream",
    "EmbeddingList",
    "EmbeddingRequest",
    "FunctionCall",
    "InvalidParameterError",
    "Message",
    "MessageStream",
    "MessagesRequest",
    "OutputFunctionCall",
    "ResponseObject",
    "ResponseStream",
    "ResponseUsage",
    "ResponsesRequest",
    "TokenLogprob",
    "ToolCall",
    "ToolUseBlock",
    "TopLogprob",
    "Usage",
    "anthropic_error",
    "anthropic_stream_error",
    "chat_completion",
    "completion",
    "embeddings",
    "message",
    "new_id",
    "openai_error",
    "openai_stream_error",
    "parse_request",
    "parse_sse",
    "response_object",
    "sse_event",
]
