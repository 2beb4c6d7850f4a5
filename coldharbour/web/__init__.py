"""The dashboard (`web` program): one page per account, a JSON API, live pushes over SSE.

``access`` checks the bind and the token; ``reads`` turns table rows into JSON; ``hub`` owns the
one LISTEN connection of the process and fans every NOTIFY out to the browsers; ``health`` keeps
the programs' heartbeats and supervisord's view (what ``chmgr status`` shows); ``app`` is the
aiohttp application. The page itself (``static/``) is plain HTML, CSS and JavaScript served by
the program: no CDN, no inline script, charts drawn as SVG by hand.
"""
