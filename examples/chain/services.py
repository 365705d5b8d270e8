"""The shop's three services: Frontend -> Catalog -> Inventory.

Each service is a plain grpcio servicer; the one downstream stub it holds comes from
``notnets_rpc.insecure_channel``, so the same code calls its neighbour over the shared
pool (``notnets:catalog``) or over TCP (``169.254.100.3:50061``). Every tier stamps
``service@host`` into the reply, which shows the request really crossed the hosts.
A request's ``depth`` is how many RPC hops it travels; a tier that is not asked to go
further answers from its own (stale) copy of the data, as a cache would.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parent.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent.parent))

from notnets_bench.protos import load_generated  # noqa: E402

DOWNSTREAM_TIMEOUT = 30.0  # seconds; a TCG guest can stall for a while under load


def load_protos() -> tuple[Any, Any]:
    """The generated shop modules (generated on the spot if `make setup` has not run)."""
    return load_generated(HERE, "shop")


shop_pb2, shop_pb2_grpc = load_protos()


def load_catalog() -> dict[str, Any]:
    with open(HERE / "catalog.json", encoding="utf-8") as f:
        data = json.load(f)
    data["by_id"] = {p["id"]: p for p in data["products"]}
    return data


def stamp(service: str) -> str:
    return f"{service}@{os.environ.get('NOTNETS_HOST') or 'local'}"


def _product(catalog: dict[str, Any], product_id: int) -> dict[str, Any]:
    products = catalog["products"]
    return catalog["by_id"].get(product_id) or products[product_id % len(products)]


class Inventory(shop_pb2_grpc.InventoryServicer):
    def __init__(self) -> None:
        self.catalog = load_catalog()
        self.me = stamp("inventory")

    def GetStock(self, request: Any, context: Any) -> Any:
        p = _product(self.catalog, request.product_id)
        return shop_pb2.Stock(product_id=p["id"], quantity=p["quantity"], warehouse=p["warehouse"], served_by=self.me)


class Catalog(shop_pb2_grpc.CatalogServicer):
    def __init__(self, inventory: Any) -> None:
        self.catalog = load_catalog()
        self.inventory = inventory
        self.me = stamp("catalog")

    def GetProduct(self, request: Any, context: Any) -> Any:
        p = _product(self.catalog, request.product_id)
        if request.depth > 1 and self.inventory is not None:
            stock = self.inventory.GetStock(shop_pb2.StockRequest(product_id=p["id"]), timeout=DOWNSTREAM_TIMEOUT)
        else:  # the catalog's own, possibly stale, stock figure
            stock = shop_pb2.Stock(product_id=p["id"], quantity=p["quantity"], warehouse=p["warehouse"])
        return shop_pb2.Product(product_id=p["id"], name=p["name"], description=p["description"],
                                price_cents=p["price_cents"], stock=stock, served_by=self.me)


class Frontend(shop_pb2_grpc.FrontendServicer):
    def __init__(self, catalog: Any) -> None:
        self.catalog_data = load_catalog()
        self.catalog = catalog
        self.me = stamp("frontend")

    def GetProductPage(self, request: Any, context: Any) -> Any:
        served_by = [self.me]
        if request.depth > 1 and self.catalog is not None:
            product = self.catalog.GetProduct(shop_pb2.ProductRequest(product_id=request.product_id,
                                                                      depth=request.depth - 1),
                                              timeout=DOWNSTREAM_TIMEOUT)
            served_by.append(product.served_by)
            if product.stock.served_by:
                served_by.append(product.stock.served_by)
        else:  # the frontend's page cache
            p = _product(self.catalog_data, request.product_id)
            product = shop_pb2.Product(product_id=p["id"], name=p["name"], description=p["description"],
                                       price_cents=p["price_cents"])
        html = self.catalog_data["page_template"].format(
            name=product.name, description=product.description, price=f"{product.price_cents / 100:.2f}",
            stock=f"{product.stock.quantity} in stock" if product.stock.quantity else "ask us")
        return shop_pb2.Page(product=product, html=html, served_by=served_by)


ROLES = ("frontend", "catalog", "inventory")
DOWNSTREAM_STUB = {"frontend": shop_pb2_grpc.CatalogStub, "catalog": shop_pb2_grpc.InventoryStub}


def servicer(role: str, downstream_channel: Any) -> tuple[Any, Any]:
    """(servicer, add_to_server function) for ``role``; the channel may be None for a leaf."""
    stub = DOWNSTREAM_STUB[role](downstream_channel) if role in DOWNSTREAM_STUB and downstream_channel else None
    if role == "frontend":
        return Frontend(stub), shop_pb2_grpc.add_FrontendServicer_to_server
    if role == "catalog":
        return Catalog(stub), shop_pb2_grpc.add_CatalogServicer_to_server
    if role == "inventory":
        return Inventory(), shop_pb2_grpc.add_InventoryServicer_to_server
    raise ValueError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
