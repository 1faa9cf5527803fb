"""Built-in notifier ``email``: SMTP with STARTTLS or SSL, credentials from env vars.

Config: ``to`` (address or list, required), ``from`` (default ``flowsh@<host>``), ``host``
(default ``localhost``), ``port`` (default 25, 587 for starttls, 465 for ssl), ``security``
(``none``, ``starttls`` or ``ssl``; default from the port), ``username`` or ``username_env``,
``password_env`` (the name of the variable holding the password — never the password
itself), ``ca_file`` (a CA bundle to verify the server with), ``timeout``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from flowsh import hookimpl
from flowsh.hookspecs import Register

if TYPE_CHECKING:
    from email.message import EmailMessage

    from flowsh.notify import Alert

_PORTS = {"none": 25, "starttls": 587, "ssl": 465}


class EmailNotifier:
    def __init__(self, channel: str, config: dict[str, Any]) -> None:
        from flowsh.notify import (
            channel_timeout,
            check_keys,
            config_error,
            get_list,
            get_str,
            not_a_bool,
        )

        check_keys(channel, config, {
            "to", "cc", "from", "host", "port", "security", "username", "username_env",
            "password_env", "ca_file",
        })
        self.channel = channel
        self.to = get_list(channel, config, "to", required=True)
        self.cc = get_list(channel, config, "cc")
        for key, addrs in (("to", self.to), ("cc", self.cc)):
            for addr in addrs:
                if "@" not in addr or any(c in addr for c in "\r\n"):
                    raise config_error(channel, key, f"{addr!r} is not an e-mail address")
        self.sender = get_str(channel, config, "from")
        self.host = get_str(channel, config, "host", "localhost") or "localhost"
        port = config.get("port")
        not_a_bool(channel, "port", port)
        security = get_str(channel, config, "security")
        if security is not None and security not in _PORTS:
            raise config_error(channel, "security", "must be one of none, starttls, ssl")
        if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
            raise config_error(channel, "port", "must be a port number (1-65535)")
        if security is None:
            security = {587: "starttls", 465: "ssl"}.get(port or 25, "none")
        self.security = security
        self.port = port or _PORTS[security]
        self.username = get_str(channel, config, "username")
        self.username_env = get_str(channel, config, "username_env")
        self.password_env = get_str(channel, config, "password_env")
        if self.username and self.username_env:
            raise config_error(channel, "username_env", "give `username` or `username_env`")
        for key in ("username_env", "password_env"):
            name = getattr(self, key)
            if name is not None and not name.replace("_", "a").isalnum():
                raise config_error(channel, key, "must name an environment variable")
        self.ca_file = get_str(channel, config, "ca_file")
        self.timeout = channel_timeout(channel, config)

    def message(self, alert: Alert) -> EmailMessage:
        # Imported here: plugin modules load at every CLI start; smtplib/email are slow.
        from email.message import EmailMessage
        from email.utils import formatdate, make_msgid

        msg = EmailMessage()
        msg["Subject"] = alert.subject
        msg["From"] = self.sender or f"flowsh@{alert.host}"
        msg["To"] = ", ".join(self.to)
        if self.cc:
            msg["Cc"] = ", ".join(self.cc)
        msg["Date"] = formatdate(alert.time, localtime=True)
        msg["Message-ID"] = make_msgid("flowsh")
        msg["X-Flowsh-Severity"] = alert.severity
        msg["X-Flowsh-Run-Id"] = alert.run_id
        msg.set_content(alert.text)
        return msg

    def _credentials(self) -> tuple[str, str] | None:
        user = self.username
        if self.username_env:
            user = os.environ.get(self.username_env)
            if not user:
                raise RuntimeError(f"${self.username_env} (username_env) is not set")
        if not self.password_env:
            return None
        password = os.environ.get(self.password_env)
        if password is None:
            raise RuntimeError(f"${self.password_env} (password_env) is not set")
        if not user:
            raise RuntimeError("password_env is set but no username/username_env")
        return user, password

    def send(self, alert: Alert) -> None:
        import smtplib
        import ssl

        creds = self._credentials()
        # Certificates are always verified; `ca_file` trusts a private CA instead.
        context = ssl.create_default_context(cafile=self.ca_file)
        smtp: smtplib.SMTP
        if self.security == "ssl":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.starttls(context=context)
            if creds:
                smtp.login(*creds)
            smtp.send_message(self.message(alert))
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()


@hookimpl
def flowsh_register_notifiers(register: Register) -> None:
    register("email", EmailNotifier)
