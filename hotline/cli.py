"""`intake asterisk …`: the development PBX (up, down, status) and the production config installer."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from core.settings import DEV_AMI_SECRET, DEV_SEAT_SECRET, Settings, get_settings
from hotline.pbx import (
    DevPbx,
    PbxError,
    PbxParams,
    ami_reachable,
    generate_prompts,
    install_config,
    params_from_settings,
    seat_password,
)


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as err:
        raise click.ClickException(f"invalid settings: {err}") from err


def register(main: click.Group) -> None:
    """Attach the `asterisk` command group."""

    @main.group()
    def asterisk() -> None:
        """Asterisk 22 PBX: a local development PBX, and the config for production."""

    @asterisk.command("up")
    def up() -> None:
        """Build (once, cached) a Debian sid root with Asterisk, install our config and run it (AMI 127.0.0.1:5038)."""
        settings = _settings()
        pbx = DevPbx.from_settings(settings)
        try:
            pid = pbx.up(params_from_settings(settings, dev=True), echo=click.echo)
        except PbxError as err:
            raise click.ClickException(str(err)) from err
        click.echo(f"asterisk running (pid {pid}); AMI 127.0.0.1:{settings.ami_port} user {settings.ami_username}; "
                   f"SIP {settings.hotline_sip_bind}; root {pbx.root}")

    @asterisk.command("down")
    def down() -> None:
        """Stop the development PBX (calls are cut)."""
        pbx = DevPbx.from_settings(_settings())
        try:
            stopped = pbx.stop()
        except PbxError as err:
            raise click.ClickException(str(err)) from err
        click.echo("asterisk stopped" if stopped else "asterisk was not running")

    @asterisk.command("status")
    def status() -> None:
        """Exit 0 only while the development PBX runs."""
        settings = _settings()
        pbx = DevPbx.from_settings(settings)
        pid = pbx.pid()
        if pid is None:
            click.echo("asterisk not running")
            sys.exit(1)
        ami = "AMI up" if ami_reachable("127.0.0.1", settings.ami_port) else "AMI not answering"
        click.echo(f"asterisk running (pid {pid}), {ami}")

    @asterisk.command("restart")
    def restart() -> None:
        """Restart the development PBX (as after a crash: calls are cut, seats stay logged in)."""
        pbx = DevPbx.from_settings(_settings())
        try:
            pid = pbx.restart()
        except PbxError as err:
            raise click.ClickException(str(err)) from err
        click.echo(f"asterisk restarted (pid {pid})")

    @asterisk.command("cli")
    @click.argument("command", nargs=-1, required=True)
    def cli(command: tuple[str, ...]) -> None:
        """Run an Asterisk CLI command on the development PBX, e.g. `intake asterisk cli queue show`."""
        try:
            click.echo(DevPbx.from_settings(_settings()).cli(" ".join(command)), nl=False)
        except PbxError as err:
            raise click.ClickException(str(err)) from err

    @asterisk.command("install-config")
    @click.option("--dest", type=click.Path(file_okay=False, path_type=Path), required=True,
                  help="Asterisk config directory to write (/etc/asterisk on the PBX, or a staging directory).")
    @click.option("--sounds-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Also generate the Chinese prompts into this sounds directory (/usr/share/asterisk/sounds).")
    @click.option("--sip-bind", default=None, help="PJSIP UDP transport address (default INTAKE_HOTLINE_SIP_BIND).")
    @click.option("--nat-address", default=None, help="Public address when the PBX is behind NAT.")
    @click.option("--local-net", multiple=True, help="Local networks not NATed (with --nat-address), e.g. 10.0.0.0/8.")
    @click.option("--carrier-match", default=None, help="Source addresses of the carrier (default: its host).")
    @click.option("--ami-bind", default="127.0.0.1", show_default=True, help="AMI listen address.")
    @click.option("--ami-permit", default="127.0.0.1/255.255.255.255", show_default=True,
                  help="Address/mask of the intake service allowed to log in to AMI.")
    @click.option("--seat-codecs", default="alaw,ulaw", show_default=True)
    def install_config_cmd(dest: Path, sounds_dir: Path | None, sip_bind: str | None, nat_address: str | None,
                           local_net: tuple[str, ...], carrier_match: str | None, ami_bind: str, ami_permit: str,
                           seat_codecs: str) -> None:
        """Render the shipped asterisk/ config for a production PBX (secrets from the INTAKE_* settings)."""
        settings = _settings()
        if settings.env == "prod":
            if settings.ami_secret.get_secret_value() == DEV_AMI_SECRET:
                raise click.ClickException("set INTAKE_AMI_SECRET (the development secret is refused in prod)")
            if settings.hotline_seat_secret.get_secret_value() == DEV_SEAT_SECRET:
                raise click.ClickException("set INTAKE_HOTLINE_SEAT_SECRET (the development secret is refused)")
        base = params_from_settings(settings, dev=False)
        nat: tuple[str, ...] = ()
        if nat_address:
            nat = (f"external_media_address={nat_address}", f"external_signaling_address={nat_address}",
                   *(f"local_net={net}" for net in local_net))
        params = PbxParams(**{
            **{f: getattr(base, f) for f in base.__dataclass_fields__},
            "sip_bind": sip_bind or base.sip_bind, "sip_nat": nat, "carrier_match": carrier_match or "",
            "ami_bind": ami_bind, "ami_permit": ami_permit, "seat_codecs": seat_codecs,
        })
        try:
            changed = install_config(dest, params)
            if sounds_dir is not None:
                prompts = generate_prompts(sounds_dir, params, cache_dir=settings.var_dir / "prompt-cache")
                click.echo(f"{len(prompts)} prompts in {sounds_dir / 'zh'}")
        except PbxError as err:
            raise click.ClickException(str(err)) from err
        click.echo(f"{len(changed)} files written to {dest}: {', '.join(changed) or 'none changed'}")
        click.echo("reload the PBX: asterisk -rx 'core reload'")

    @asterisk.command("seat-password")
    @click.argument("extension")
    def seat_password_cmd(extension: str) -> None:
        """Print the SIP password of a seat extension (for provisioning its phone)."""
        settings = _settings()
        params = params_from_settings(settings, dev=False)
        if extension not in params.seats():
            raise click.ClickException(f"{extension} is not a seat extension ({params.seats()[0]}-{params.seats()[-1]})")
        click.echo(seat_password(settings.hotline_seat_secret.get_secret_value(), extension))
