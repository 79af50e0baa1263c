"""Cloud access tokens for providers: static, or minted by a cloud's own credential code
and refreshed before they expire.

Vertex AI and Microsoft Entra ID access tokens live about an hour, so a gateway that read
one at start-up would stop working an hour later. A ``TokenSource`` hands a provider the
token for each request: a cached string (no I/O) until the token nears its expiry, then a
new one, minted in a worker thread (the cloud SDKs are blocking) by one refresh that every
concurrent caller shares. The cloud SDKs are optional extras (``gcp``: google-auth,
``azure``: azure-identity), imported only when a provider needs them; without them
start-up stops with one line naming the extra.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..core.errors import UpstreamUnavailableError
from .base import secret

if TYPE_CHECKING:
    from ..wire.headers import HeaderList

logger = logging.getLogger("gateway")

GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
# A token is replaced this long before it expires (or halfway through a shorter life)...
REFRESH_AHEAD = 300.0
# ...and not used at all in its last moments (or its last tenth), lest it expire in flight.
EXPIRY_MARGIN = 10.0
RETRY_AFTER = 5.0  # after a failed early refresh, while the old token still serves
HORIZON = 3600.0  # a token that states no expiry is treated as living this long
ENTRA_KINDS = ("client_secret", "managed_identity", "workload_identity", "default")


def needs_extra(what: str, extra: str) -> str:
    """The one start-up line for a missing optional dependency."""
    return f"{what} needs the {extra} extra: pip install 'gateway[{extra}]'"


class TokenSource(Protocol):
    """Where a provider gets its bearer token, once per request."""

    async def token(self) -> str:
        """The current token: cached, refreshed before it expires. A token that cannot
        be had is ``UpstreamUnavailableError`` (retryable)."""
        ...

    def warm(self) -> None:
        """Start getting the first token now (at worker start-up), without waiting."""
        ...

    def describe(self) -> str: ...


async def bearer(source: TokenSource | None, headers: HeaderList) -> HeaderList:
    """``headers`` and this request's bearer token, when the provider has a source."""
    if source is None:
        return headers
    return [*headers, ("authorization", f"Bearer {await source.token()}")]


class StaticToken:
    """A token given in the config or the environment: used as is, never refreshed."""

    def __init__(self, value: str) -> None:
        self._value = value

    async def token(self) -> str:
        return self._value

    def warm(self) -> None:
        """Nothing to get."""

    def describe(self) -> str:
        return "a static token"


class Minted(NamedTuple):
    """A token and when it expires (seconds since the epoch)."""

    token: str
    expires_at: float


class RefreshingToken:
    """A token minted by a blocking ``mint()`` (a cloud SDK's), cached until it nears
    its expiry and replaced by one refresh at a time, in a worker thread.

    Past ``_refresh_at`` a refresh starts in the background and callers keep the current
    token; past ``_usable_until`` (or with none yet) callers wait for the refresh. A
    failed refresh keeps the old token while it is still valid.
    """

    def __init__(self, name: str, mint: Callable[[], Minted], cloud: str) -> None:
        self.name = name  # the provider's, for logs and errors
        self.cloud = cloud
        self._mint = mint
        self._current: Minted | None = None
        self._refresh_at = 0.0
        self._usable_until = 0.0
        self._retry_at = 0.0
        self._task: asyncio.Task[Minted] | None = None

    def describe(self) -> str:
        return f"{self.cloud} credentials, refreshed"

    async def token(self) -> str:
        current = self._current
        if current is not None and time.time() < self._refresh_at:
            return current.token  # the common case: no I/O, no task
        return await self._renewed()

    def warm(self) -> None:
        if self._current is None:
            self._refreshing()

    async def _renewed(self) -> str:
        """A token near or past its expiry: refreshed in the background, or waited for."""
        now = time.time()
        current = self._current
        if current is not None and now < self._usable_until:
            if now >= self._retry_at:
                self._refreshing()
            return current.token
        try:
            return (await asyncio.shield(self._refreshing())).token
        except Exception as exc:
            if current is not None and time.time() < current.expires_at:
                return current.token  # it still serves; the next request tries again
            raise UpstreamUnavailableError(
                f"upstream '{self.name}' has no valid {self.cloud} access token ({_said(exc)})"
            ) from exc

    def _refreshing(self) -> asyncio.Task[Minted]:
        """The refresh under way on this loop, or a new one: one at a time."""
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._task = asyncio.get_running_loop().create_task(self._refresh())
            task.add_done_callback(self._settled)
        return task

    async def _refresh(self) -> Minted:
        minted = await asyncio.to_thread(self._mint)
        now = time.time()
        life = max(minted.expires_at - now, 0.0)
        self._current = minted
        self._refresh_at = minted.expires_at - min(REFRESH_AHEAD, life / 2)
        self._usable_until = minted.expires_at - min(EXPIRY_MARGIN, life / 10)
        return minted

    def _settled(self, task: asyncio.Task[Minted]) -> None:
        """A failed refresh is logged (and retrieved, so asyncio does not complain)."""
        if task.cancelled() or task.exception() is None:
            return
        self._retry_at = time.time() + RETRY_AFTER
        logger.warning(
            "provider %s: refreshing its %s access token failed: %s",
            self.name,
            self.cloud,
            _said(task.exception()),
        )


def _said(exc: BaseException | None, limit: int = 300) -> str:
    """An SDK's error in one short line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ======================================================================== Google Cloud


class GoogleADC(RefreshingToken):
    """Google's Application Default Credentials (google-auth's own code): the file
    ``GOOGLE_APPLICATION_CREDENTIALS`` names (a service account, workload identity
    federation, a user's), gcloud's, or the metadata server's on Google Cloud."""

    def __init__(self, name: str, scopes: tuple[str, ...] = (GOOGLE_SCOPE,)) -> None:
        try:
            import google.auth
            import google.auth.transport.requests
        except ImportError:
            raise ValueError(needs_extra('credentials = "adc"', "gcp")) from None
        self._auth = google.auth
        logging.getLogger("google.auth._default").addFilter(_project_is_configured)
        self._transport = google.auth.transport.requests
        self._scopes = list(scopes)
        self._credentials: Any = None
        self._request: Any = None
        super().__init__(name, self._mint_google, "Google")

    def _mint_google(self) -> Minted:
        """Find the credentials once, then refresh them (in a worker thread)."""
        if self._credentials is None:
            self._credentials, _ = self._auth.default(scopes=self._scopes)
            self._request = self._transport.Request()
        credentials = self._credentials
        credentials.refresh(self._request)
        expiry = credentials.expiry  # naive UTC, google-auth's convention
        if expiry is None:
            return Minted(credentials.token, time.time() + HORIZON)
        return Minted(credentials.token, expiry.replace(tzinfo=UTC).timestamp())

    def describe(self) -> str:
        return "Google application default credentials"


def _project_is_configured(record: logging.LogRecord) -> bool:
    """google-auth warns when ADC names no project: the provider's table names it."""
    return not record.getMessage().startswith("No project ID could be determined")


def google_token(
    name: str, token: str | None, credentials: str | None, what: str = "Vertex AI"
) -> TokenSource:
    """Vertex AI's token source: a static ``access_token``, else ADC (the default)."""
    if credentials not in (None, "adc"):
        raise ValueError(f'credentials must be "adc", got {credentials!r}')
    if token is not None:
        if credentials is not None:
            raise ValueError('give an access token or credentials = "adc", not both')
        return StaticToken(token)
    return GoogleADC(name)


# ======================================================================== Microsoft Entra ID


class AzureIdentity(RefreshingToken):
    """A Microsoft Entra ID token from an azure-identity credential (or any object with
    azure-core's ``get_token(scope)``), for Azure OpenAI's scope."""

    def __init__(self, name: str, credential: Any, scope: str = AZURE_SCOPE) -> None:
        self._credential = credential
        self._scope = scope
        super().__init__(name, self._mint_azure, "Entra ID")

    def _mint_azure(self) -> Minted:
        access = self._credential.get_token(self._scope)
        return Minted(access.token, float(access.expires_on))

    def describe(self) -> str:
        return f"Entra ID ({type(self._credential).__name__})"


class EntraSettings(NamedTuple):
    """The ``entra`` part of an azure provider's table."""

    kind: str  # one of ENTRA_KINDS
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret_env: str | None = None
    authority: str | None = None  # another cloud's login host: login.microsoftonline.us
    # MSAL's check of an unknown authority at login.microsoftonline.com, off (Azure Stack,
    # a private cloud): client_secret and default only, the credentials MSAL serves
    disable_instance_discovery: bool = False


def entra_credential(settings: EntraSettings, environ: Mapping[str, str]) -> Any:
    """The azure-identity credential ``entra`` names (built now: it does no I/O yet)."""
    if settings.kind not in ENTRA_KINDS:
        raise ValueError(f"entra must be one of {', '.join(ENTRA_KINDS)}; got {settings.kind!r}")
    try:
        import azure.identity as identity
    except ImportError:
        raise ValueError(needs_extra(f'entra = "{settings.kind}"', "azure")) from None
    options: dict[str, Any] = {"authority": settings.authority} if settings.authority else {}
    if settings.disable_instance_discovery:
        if settings.kind not in ("client_secret", "default"):
            raise ValueError(
                'disable_instance_discovery goes with entra = "client_secret" or "default"'
            )
        options["disable_instance_discovery"] = True
    if settings.kind == "client_secret":
        if not (settings.tenant_id and settings.client_id and settings.client_secret_env):
            raise ValueError(
                'entra = "client_secret" needs tenant_id, client_id, client_secret_env'
            )
        client_secret = secret(None, settings.client_secret_env, environ)
        return identity.ClientSecretCredential(
            settings.tenant_id, settings.client_id, client_secret, **options
        )
    if settings.kind == "managed_identity":
        return identity.ManagedIdentityCredential(client_id=settings.client_id, **options)
    if settings.kind == "workload_identity":
        named = {"tenant_id": settings.tenant_id, "client_id": settings.client_id}
        options.update({k: v for k, v in named.items() if v})
        try:  # AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE by default
            return identity.WorkloadIdentityCredential(**options)
        except ValueError as exc:
            raise ValueError(f'entra = "workload_identity": {_said(exc, 600)}') from None
    if settings.client_id:
        options["managed_identity_client_id"] = settings.client_id
    return identity.DefaultAzureCredential(**options)
