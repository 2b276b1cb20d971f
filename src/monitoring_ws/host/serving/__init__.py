"""Serving, in one place: Hypercorn on ``listen``, the lean agent listener on
``agent_listen`` (``lean.py`` accepts, ``leansocket.py`` runs an upgraded socket,
``leanhttp.py`` answers plain HTTP), the ASGI glue (``asgi.py``), TLS (``tls.py``) and
the C frame unmasker (``wsmask.py``). ``listeners.listener_server`` picks per listener."""
