"""The browser demo: one page served on loopback (`python -m web_demo`), see docs/web_demo.md.

- `web_demo.server`: static files and the `/ws` websocket of each browser tab;
- `web_demo.tab`: what the server does for one tab in a call (a two-way call peer whose
  sender half reads the browser's camera track and whose receiver half feeds a video track
  back to the browser, with the tab's edits applied);
- `web_demo.portrait`: the still-picture mode (one key frame, edited on every slider move);
- `web_demo.media`: the aiortc tracks between the browser and the call halves.
"""
