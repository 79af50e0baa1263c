"""OpenAI chat -> AWS Bedrock's Converse API, and back; one module per direction.

``request.chat_to_converse`` turns a chat request into a Converse request (the model
names the URL, not the body); ``answer.converse_to_chat`` turns the answer into a
``chat.completion``; ``stream.ConverseStream`` turns ConverseStream's binary event
stream (``eventstream``: AWS's framing, decoded incrementally, CRCs checked) into
``chat.completion.chunk`` events as it arrives; ``errors`` turns Bedrock's errors (the
``x-amzn-ErrorType`` header, or an exception message inside a stream) into OpenAI's.
``invoke`` is Claude through InvokeModel (Anthropic's Messages API in Bedrock's envelope;
its stream's chunks to the Anthropic translator, or re-framed as Anthropic's SSE), and
``embeddings`` the Titan and Cohere embedding models through InvokeModel.
Signing the request (SigV4) is the provider's: it needs botocore, which nothing here
imports. The providers page lists the choices made where the APIs differ.
"""
