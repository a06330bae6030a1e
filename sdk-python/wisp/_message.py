"""Requests, responses, their fields, and the decisions a hook makes."""

from typing import Iterable, List, Mapping, NoReturn, Optional, Tuple, Union

from wit_world.imports import proxy as _proxy
from wit_world.imports import sip

from ._errors import Err, WispError

Endpoint = sip.Endpoint
Transport = sip.Transport
Header = sip.Header
UriParts = sip.UriParts
Reply = sip.Reply
RouteCheck = _proxy.RouteCheck
Hooks = _proxy.Hooks

#: Reply headers: (name, value) pairs, Header records, or a mapping.
Headers = Union[Iterable[Union[Tuple[str, str], Header]], Mapping[str, str]]

_METHODS = {
    sip.Method_Invite: "INVITE",
    sip.Method_Ack: "ACK",
    sip.Method_Bye: "BYE",
    sip.Method_Cancel: "CANCEL",
    sip.Method_Register: "REGISTER",
    sip.Method_Options: "OPTIONS",
    sip.Method_Info: "INFO",
    sip.Method_Update: "UPDATE",
    sip.Method_Prack: "PRACK",
    sip.Method_Subscribe: "SUBSCRIBE",
    sip.Method_Notify: "NOTIFY",
    sip.Method_Publish: "PUBLISH",
    sip.Method_Message: "MESSAGE",
    sip.Method_Refer: "REFER",
}


def _method_name(method: "sip.Method") -> str:
    name = _METHODS.get(type(method))
    # `other` carries the token as written.
    return name if name is not None else method.value


class RequestInfo:
    """What the route hook receives about a request, read without host calls."""

    __slots__ = ("method", "in_dialog", "uri_is_myself", "source", "source_trusted")

    def __init__(self, raw: "sip.RequestInfo"):
        #: The method ("INVITE", "ACK"...; any other token as written).
        self.method: str = _method_name(raw.method)
        #: To carries a tag: the request belongs to a dialog (`has_totag()`).
        self.in_dialog: bool = raw.in_dialog
        #: The Request-URI named this proxy on arrival (`uri == myself`).
        self.uri_is_myself: bool = raw.uri_is_myself
        #: Where the request came from (`$si`, `$sp`, `$proto`).
        self.source: Endpoint = raw.source
        #: The source is in the `trusted` addresses of the configuration.
        self.source_trusted: bool = raw.source_trusted

    def __repr__(self) -> str:
        return (
            f"RequestInfo(method={self.method!r}, in_dialog={self.in_dialog}, "
            f"uri_is_myself={self.uri_is_myself}, source={self.source!r}, "
            f"source_trusted={self.source_trusted})"
        )


class Decision(BaseException):
    """What a decision raises, for the SDK's hook wrapper to catch.

    `kind` is "reply", "relay", "forward" or None for `exit()`. A
    BaseException, not an Exception, so that a route's `except Exception`
    lets it through, as Python does with SystemExit.
    """

    def __init__(self, kind: Optional[str], value=None):
        super().__init__(kind)
        self.kind = kind
        self.value = value


def exit() -> NoReturn:  # noqa: A001 - Kamailio's `exit`, on purpose
    """Stops the hook here without a decision (Kamailio's `exit`).

    `route` drops the request, `on_reply` keeps the response, `on_failure`
    sends the best response upstream. Stops the callers too: a helper
    function that calls it ends the whole hook.
    """
    raise Decision(None)


# The fields handles taken during the current hook call, released when it
# ends: a handle is valid for that call only, and dropping it early frees
# the host's side at once.
_taken: List["sip.Fields"] = []


def release_fields() -> None:
    while _taken:
        _taken.pop().__exit__(None, None, None)


def _take_fields(raw: Union["sip.Request", "sip.Response"]) -> "Fields":
    fields = raw.fields()
    _taken.append(fields)
    return Fields(fields)


class Fields:
    """The headers and body of one message, request or response.

    Names match case-insensitively, compact forms too ("f" finds From).
    Valid for the hook call it was taken in. `"Route" in req.fields` is
    `has`.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: "sip.Fields"):
        #: The raw resource, for calls the wrapper does not cover.
        self.raw = raw

    def get(self, name: str) -> Optional[str]:
        """The first value of a header (`$hdr(Name)`)."""
        return self.raw.get(name)

    def get_all(self, name: str) -> List[str]:
        """Every value of a header in order, comma-separated lists split."""
        return self.raw.get_all(name)

    def has(self, name: str) -> bool:
        """Whether the message has a header of that name (`is_present_hf`)."""
        return self.raw.has(name)

    def __contains__(self, name: str) -> bool:
        return self.raw.has(name)

    def names(self) -> List[str]:
        """The names of all headers, in order."""
        return self.raw.names()

    def append(self, name: str, value: str) -> None:
        """Adds a header after the others (`append_hf`); WispError if refused."""
        try:
            self.raw.append(name, value)
        except Err as err:
            raise WispError(err.value) from None

    def set(self, name: str, value: str) -> None:
        """Replaces every header of that name with one holding `value`."""
        try:
            self.raw.set(name, value)
        except Err as err:
            raise WispError(err.value) from None

    def remove(self, name: str) -> int:
        """Removes every header of that name (`remove_hf`); how many there were."""
        try:
            return self.raw.remove(name)
        except Err as err:
            raise WispError(err.value) from None

    def body(self) -> bytes:
        """The body (`$rb`)."""
        return self.raw.body()

    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.raw.body().decode("utf-8", "replace")

    def set_body(self, body: Union[bytes, str], content_type: Optional[str] = None) -> None:
        """Replaces the body, and Content-Type when `content_type` is given
        (an empty body removes it). Content-Length is the host's."""
        if isinstance(body, str):
            body = body.encode()
        try:
            self.raw.set_body(content_type, body)
        except Err as err:
            raise WispError(err.value) from None


def _headers(headers: Headers) -> List[Header]:
    if isinstance(headers, Mapping):
        return [Header(name, value) for name, value in headers.items()]
    return [h if isinstance(h, Header) else Header(h[0], h[1]) for h in headers]


class Request:
    """The request being routed; in `on_reply` and `on_failure`, the
    request as relayed; in `on_branch`, that branch's copy. Valid during
    the hook call.

    `info`, `method` and `fields` are attributes (read once per hook);
    the methods ask the host each time, since edits change what they say.
    """

    __slots__ = ("raw", "_info", "_fields", "_method")

    def __init__(self, raw: "sip.Request", info: Optional["sip.RequestInfo"] = None):
        #: The raw resource, for calls the wrapper does not cover.
        self.raw = raw
        self._info = RequestInfo(info) if info is not None else None
        self._fields: Optional[Fields] = None
        self._method: Optional[str] = None

    @property
    def info(self) -> RequestInfo:
        """What the route hook received: method, in_dialog, uri_is_myself,
        source, source_trusted."""
        if self._info is None:
            self._info = RequestInfo(self.raw.info())
        return self._info

    @property
    def fields(self) -> Fields:
        """Its headers and body."""
        if self._fields is None:
            self._fields = _take_fields(self.raw)
        return self._fields

    @property
    def method(self) -> str:
        """The method (`$rm`), e.g. "INVITE"."""
        if self._info is not None:
            return self._info.method
        if self._method is None:
            # Outside `route` the method alone is one small host call,
            # where `info` would also bring the source.
            self._method = _method_name(self.raw.method())
        return self._method

    def is_method(self, *methods: str) -> bool:
        """Whether the method is one of `methods` (`is_method("INVITE|BYE")`)."""
        return self.method in methods

    def uri(self) -> str:
        """The Request-URI (`$ru`)."""
        return self.raw.uri()

    def uri_parts(self) -> Optional[UriParts]:
        """The Request-URI's parts; None when it is not a SIP URI."""
        return self.raw.uri_parts()

    def uri_user(self) -> Optional[str]:
        """The user part of the Request-URI (`$rU`)."""
        parts = self.raw.uri_parts()
        return parts.user if parts is not None else None

    def uri_host(self) -> str:
        """The host part of the Request-URI (`$rd`); empty when it is not a SIP URI."""
        parts = self.raw.uri_parts()
        return parts.host if parts is not None else ""

    def uri_is_myself(self) -> bool:
        """Whether the Request-URI names this proxy now (`uri == myself`);
        `info.uri_is_myself` is on arrival."""
        return _proxy.is_myself(self.raw.uri())

    def set_uri(self, uri: str) -> None:
        """Replaces the Request-URI (`$ru = "..."`); WispError if invalid."""
        try:
            self.raw.set_uri(uri)
        except Err as err:
            raise WispError(err.value) from None

    def from_uri(self) -> str:
        """The From URI (`$fu`); empty when From cannot be parsed."""
        return self.raw.from_uri()

    def from_user(self) -> Optional[str]:
        """The user of the From URI (`$fU`)."""
        parts = self.raw.from_parts()
        return parts.user if parts is not None else None

    def from_host(self) -> str:
        """The host of the From URI (`$fd`); empty when From cannot be parsed."""
        parts = self.raw.from_parts()
        return parts.host if parts is not None else ""

    def from_is_myself(self) -> bool:
        """Whether the From URI names this proxy (`from_uri == myself`)."""
        return _proxy.is_myself(self.raw.from_uri())

    def to_uri(self) -> str:
        """The To URI (`$tu`)."""
        return self.raw.to_uri()

    def to_user(self) -> Optional[str]:
        """The user of the To URI (`$tU`)."""
        parts = self.raw.to_parts()
        return parts.user if parts is not None else None

    def to_host(self) -> str:
        """The host of the To URI (`$td`)."""
        parts = self.raw.to_parts()
        return parts.host if parts is not None else ""

    def max_forwards(self, limit: Optional[int] = None) -> None:
        """Checks and decrements Max-Forwards (`mf_process_maxfwd_header`),
        adding it with `limit` when absent (default: `MAX_FORWARDS`, else
        10). A refused WispError (483) when no hops are left."""
        try:
            _proxy.max_forwards(self.raw, limit)
        except Err as err:
            raise WispError(err.value) from None

    def sanity_check(self) -> None:
        """Checks what a proxy must refuse (`sanity_check()`); a refused
        WispError (400, 416, 420...)."""
        try:
            _proxy.sanity_check(self.raw)
        except Err as err:
            raise WispError(err.value) from None

    def record_route(self) -> None:
        """Adds Record-Route so the dialog stays on this proxy (`record_route()`)."""
        try:
            _proxy.record_route(self.raw)
        except Err as err:
            raise WispError(err.value) from None

    def loose_route(self) -> RouteCheck:
        """Follows the Route set of an in-dialog request (`loose_route()`):
        RouteCheck.NONE (no Route), UNVERIFIED (followed a Route this proxy
        cannot vouch for) or VERIFIED (one it record-routed for this dialog)."""
        return _proxy.loose_route(self.raw)

    def append_branch(self, uri: str) -> None:
        """Adds a branch to the next relay (`append_branch(uri)`); WispError
        past the limits."""
        try:
            _proxy.append_branch(self.raw, uri)
        except Err as err:
            raise WispError(err.value) from None

    def reply(
        self,
        code: Union[int, Reply],
        reason: Optional[str] = None,
        headers: Headers = (),
    ) -> NoReturn:
        """Answers and stops the hook (`sl_send_reply`, `t_reply`).

        With a code, an optional reason (None: the standard phrase) and
        headers, or with a Reply a service handed back
        (`req.reply(registrar.save(req))`). From `on_failure`, answers the
        caller instead of the best response.
        """
        if isinstance(code, Reply):
            raise Decision("reply", code)
        raise Decision("reply", Reply(code, reason, _headers(headers)))

    def relay(
        self,
        dest: Optional[str] = None,
        *,
        invite_timeout_ms: Optional[int] = None,
        final_timeout_ms: Optional[int] = None,
    ) -> NoReturn:
        """Relays statefully and stops the hook (`t_relay()`).

        To `dest` (a SIP URI or `host:port`), else where `lookup` or
        `loose_route` pointed, else the first Route, else the Request-URI;
        plus one branch per `append_branch`, in parallel. The timeouts
        default to the tenant params `FR_INV_TIMER_MS` / `FR_TIMER_MS`,
        else 120000 / 30000. From `on_failure`, new branches (serial
        forking).
        """
        raise Decision("relay", sip.Relay(dest, invite_timeout_ms, final_timeout_ms))

    def forward(self, dest: Optional[str] = None) -> NoReturn:
        """Forwards statelessly and stops the hook (`forward()`): to `dest`,
        else as `relay` would choose. No transaction follows. `route` only."""
        raise Decision("forward", dest)


class Response:
    """A response of one branch, as `on_reply` and `on_failure` see it.
    Edits change the response that goes upstream. Valid during the hook
    call."""

    __slots__ = ("raw", "_fields", "_status")

    def __init__(self, raw: "sip.Response"):
        #: The raw resource, for calls the wrapper does not cover.
        self.raw = raw
        self._fields: Optional[Fields] = None
        self._status: Optional[int] = None

    @property
    def fields(self) -> Fields:
        """Its headers and body."""
        if self._fields is None:
            self._fields = _take_fields(self.raw)
        return self._fields

    def status(self) -> int:
        """The status code (`$rs`), e.g. 486."""
        if self._status is None:
            self._status = self.raw.status()
        return self._status

    def is_status(self, *codes: int) -> bool:
        """Whether the status is one of `codes` (`t_check_status("486|408")`)."""
        return self.status() in codes

    def reason(self) -> str:
        """The reason phrase (`$rr`)."""
        return self.raw.reason()

    def source(self) -> Endpoint:
        """The address it came from."""
        return self.raw.source()


def is_myself(uri: str) -> bool:
    """Whether a URI names this proxy (Kamailio's `uri == myself`)."""
    return _proxy.is_myself(uri)


def parse_uri(uri: str) -> Optional[UriParts]:
    """The parts of a SIP URI; None when it is not one."""
    return _proxy.parse_uri(uri)


def arm(hooks: Hooks) -> None:
    """Arms the hooks the current transaction runs besides `route`, in place
    of those armed before (Kamailio's `t_on_reply`, `t_on_failure`,
    `t_on_branch`; since 0.2.1). Until a hook of the transaction arms some,
    it runs every hook (0.2.0's behaviour); a routing that arms only the hooks it
    uses spares the host a call per response or branch it would not use.
    A hook not armed is not called: the response is kept, the best response
    goes upstream, the branch goes as it is. `Hooks(0)` arms none::

        arm(Hooks.ON_FAILURE)  # then req.relay()
    """
    _proxy.arm(hooks)
