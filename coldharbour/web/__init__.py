"""The dashboard (`web` program): one page per account, a JSON API, live pushes over SSE.

``access`` checks the bind, the token and holds the security headers; ``guard`` keeps clients
from exhausting the process (connection cap, error answers with the headers); ``hub`` owns the
one LISTEN connection of the process and fans every NOTIFY out to the browsers, reading the
tables through ``db.dashboard`` (``web/`` holds no SQL); ``health`` keeps the programs'
heartbeats and supervisord's view, judged by ``coldharbour.health`` (what ``chmgr status``
says); ``figures`` keeps the broker's account figures for the header; ``app`` is the aiohttp
application. The page itself (``static/``) is plain HTML, CSS and JavaScript served by the
program: no CDN, no inline script, charts drawn as SVG by hand. Nothing here imports ``cli/``.
"""
