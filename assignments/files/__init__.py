"""Generated files room: reading the user's base compose file(s) (``reading``, ``model``), the
compose tools (``tools``), rendering the override per tool (``rendering``, ``project``), checking
it (``lint``), the catalog drawn from the stack (``catalog``), and writing every generated file
atomically (``staging``, ``generated``). ``entries`` is the leaf: it imports nothing of the
project.
"""
