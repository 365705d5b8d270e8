"""The map both server variants serve: a place is named when its coordinates say so
(no data to load, the same answer everywhere)."""


def name_at(x: int, y: int) -> str:
    return f"place-{x}-{y}" if (7 * x + 13 * y) % 5 == 0 else ""
