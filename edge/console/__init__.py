"""The installer's console: what the door sees, live, in a browser (issue 12).

Off unless ``console.listen`` is set (or ``edge run --console``). Starlette
and uvicorn are imported only then, by :mod:`edge.console.server`; the
frame loop hands frames to :class:`edge.console.feed.LiveFeed` only while
someone watches. Modules: ``token`` (the login token), ``auth`` (sessions,
CSRF), ``feed`` (frames to JPEGs), ``camera`` (the feed as an enrollment
source), ``pages`` (HTML), ``app`` (routes), ``server`` (uvicorn's thread).
"""
