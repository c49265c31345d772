"""OpenAI and Anthropic wire types and stream builders.

Shared by Kingpost's engines and public for custom ``model.py`` authors, so a model
can answer in the right shape with one call::

    from kingpost.protocols import ChatCompletionStream, chat_completion

    class Model:
        async def chat_completions(self, inputs):
            return chat_completion(text="Hello!", model="my-model")

Request types validate with :func:`parse_request`, which raises
:class:`InvalidParameterError` (HTTP 400, naming the parameter); the server renders it
in the error shape of the route it was raised on. Everything here builds plain data
or bytes: no Starlette objects.
"""

from kingpost.errors import InvalidParameterError
from kingpost.protocols.anthropic_messages import (
    Message,
    MessagesRequest,
    MessageStream,
    TextBlockParam,
    ToolResultBlockParam,
    ToolUseBlock,
    message,
)
from kingpost.protocols.errors import (
    anthropic_error_body,
    anthropic_stream_error,
    openai_error_body,
    openai_stream_error,
    parse_request,
)
from kingpost.protocols.ids import new_id
from kingpost.protocols.openai_chat import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatCompletionStream,
    ChoiceLogprobs,
    FunctionCall,
    NamedToolChoice,
    ToolCall,
    chat_completion,
)
from kingpost.protocols.openai_common import TokenLogprob, TopLogprob, Usage
from kingpost.protocols.openai_completions import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionStream,
    completion,
)
from kingpost.protocols.openai_embeddings import EmbeddingList, EmbeddingRequest, embeddings
from kingpost.protocols.openai_responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    NamedFunctionChoice,
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
    "ChatChoice",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionRequest",
    "ChatCompletionStream",
    "ChoiceLogprobs",
    "Completion",
    "CompletionChoice",
    "CompletionLogprobs",
    "CompletionRequest",
    "CompletionStream",
    "EmbeddingList",
    "EmbeddingRequest",
    "FunctionCall",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "InvalidParameterError",
    "Message",
    "MessageStream",
    "MessagesRequest",
    "NamedFunctionChoice",
    "NamedToolChoice",
    "OutputFunctionCall",
    "ResponseObject",
    "ResponseStream",
    "ResponseUsage",
    "ResponsesRequest",
    "TextBlockParam",
    "TokenLogprob",
    "ToolCall",
    "ToolResultBlockParam",
    "ToolUseBlock",
    "TopLogprob",
    "Usage",
    "anthropic_error_body",
    "anthropic_stream_error",
    "chat_completion",
    "completion",
    "embeddings",
    "message",
    "new_id",
    "openai_error_body",
    "openai_stream_error",
    "parse_request",
    "parse_sse",
    "response_object",
    "sse_event",
]
