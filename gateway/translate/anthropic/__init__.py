"""OpenAI chat ⇄ Anthropic Messages, both ways; one module per direction.

To Anthropic (an OpenAI client, a Claude model): ``request.chat_to_messages`` turns a
chat request into a Messages request; ``answer.message_to_chat`` turns the answer back
into a ``chat.completion``; ``stream.MessagesStream`` turns Anthropic's event stream into
``chat.completion.chunk`` events as it arrives; ``errors.error_to_openai`` turns an
error; ``usage`` reads what an answer used.

From Anthropic (an Anthropic client at ``/v1/messages``, any other model): the front
door's ``front_request.messages_to_chat`` turns a Messages request into a chat request;
``front_answer.chat_to_message`` and ``front_stream.ChatStream`` turn the answer and the
stream back; ``errors.anthropic_error`` writes an error in Anthropic's shape.

The README's provider table lists the choices made where the two APIs differ.
"""
