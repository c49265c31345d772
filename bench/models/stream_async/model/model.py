"""Streams ``chunks`` small tokens from async generators, as an LLM streams tokens.

predict streams raw tokens; chat_completions streams server-sent events.
"""


class Model:
    async def predict(self, model_input):
        for i in range(int(model_input["chunks"])):
            yield f"tok{i:05d} "

    async def chat_completions(self, model_input):
        for i in range(int(model_input["chunks"])):
            yield f'data: {{"index":{i},"delta":"tok{i:05d} "}}\n\n'
        yield "data: [DONE]\n\n"
