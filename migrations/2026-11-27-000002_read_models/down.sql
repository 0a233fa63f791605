DROP TABLE rm_product_sales;
DROP TABLE rm_sales_daily;
DROP TABLE rm_customer_summary;
DROP TABLE rm_order_view;
DROP TABLE rm_product_view;
DROP TABLE rm_categories;
