"""OpenAI chat and embeddings -> Google's Gemini API (generateContent), and back.

``request.chat_to_gemini`` turns a chat request into a GenerateContentRequest;
``answer.response_to_chat`` turns the answer into a ``chat.completion``;
``stream.GeminiStream`` turns ``streamGenerateContent?alt=sse`` into
``chat.completion.chunk`` events as it arrives; ``errors.error_to_openai`` turns Google's
error shape into OpenAI's; ``embeddings`` goes through ``embedContent`` or
``batchEmbedContents``. The README's provider table lists the choices made where the
APIs differ.
"""
