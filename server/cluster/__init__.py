"""Sessions across machines: a gateway keeps the signalling and places each session on a Ray node.

``placement`` (pure: which node takes a session), ``node`` (the sessions of one node), ``gateway`` (the
server's signalling with the sessions on nodes), ``ray_nodes`` (nodes as Ray actors), ``__main__``
(``python -m server.cluster local|node|gateway|drain|status``). See docs/deploy.md, Cluster with Ray.
"""
