"""Where the example's data lives, in words fit for a page (never the API token)."""

from django_cfkv import conf


def describe_store(alias="default"):
    """Return a one-line description of the store behind a CFKV alias."""
    config = conf.alias_config(alias)
    if config["BACKEND"] == "local":
        return f"LocalKV (embedded SQLite) in {config['PATH']}"
    if config["BACKEND"] == "cloudflare":
        where = config["BASE_URL"]
        if where == conf.ALIAS_DEFAULTS["BASE_URL"]:
            where = "Cloudflare"
        return f"Workers KV namespace {config.get('NAMESPACE_ID')} at {where}"
    return f"{config['BACKEND']}"


def session_kv_key(session):
    """Return the KV key holding ``session``, or None before it is first saved."""
    if not session.session_key:
        return None
    return session.kv_key(session.session_key)
