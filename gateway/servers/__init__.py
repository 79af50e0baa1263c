"""Server adapters: each turns its server's requests into ``gateway.http.Request`` and
writes back the core's responses. No routing, hook or error logic lives here."""
