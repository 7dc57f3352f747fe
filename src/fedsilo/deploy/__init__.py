"""Multi-site deployment on Flower: certificates, SuperLink, SuperNodes, runs (``fedsilo deploy``).

Each hospital runs a Flower SuperNode next to its own data; the coordinator runs the SuperLink.
fedsilo only prepares keys and starts Flower's own processes with TLS and SuperNode
authentication on; it carries no traffic itself. See the README section "Deploying to real sites".
"""

from fedsilo.deploy.certs import DeployError, SiteBundle, make_certs, read_site_bundle

__all__ = ["DeployError", "SiteBundle", "make_certs", "read_site_bundle"]
