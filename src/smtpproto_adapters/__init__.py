"""Drivers that run :mod:`smtpproto` on real I/O (asyncio, anyio, trio, blocking sockets).

The drivers arrive in a later release; the package exists so that its name and layout are fixed.
"""

__all__: list[str] = []
