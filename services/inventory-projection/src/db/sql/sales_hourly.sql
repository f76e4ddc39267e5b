-- Sales per store, sku, UTC hour and currency: every column is a sum.
INSERT INTO {color}_sales_hourly AS t (store_id, sku, hour_start, currency, qty_sold, gross_minor,
    discounts_minor, tax_minor, net_minor, qty_returned, refunded_minor, refunded_tax_minor,
    sale_lines, refund_lines)
VALUES {rows}
ON CONFLICT (store_id, sku, hour_start, currency) DO UPDATE SET
    qty_sold = t.qty_sold + excluded.qty_sold,
    gross_minor = t.gross_minor + excluded.gross_minor,
    discounts_minor = t.discounts_minor + excluded.discounts_minor,
    tax_minor = t.tax_minor + excluded.tax_minor,
    net_minor = t.net_minor + excluded.net_minor,
    qty_returned = t.qty_returned + excluded.qty_returned,
    refunded_minor = t.refunded_minor + excluded.refunded_minor,
    refunded_tax_minor = t.refunded_tax_minor + excluded.refunded_tax_minor,
    sale_lines = t.sale_lines + excluded.sale_lines,
    refund_lines = t.refund_lines + excluded.refund_lines
