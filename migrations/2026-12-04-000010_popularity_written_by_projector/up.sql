-- The projector now writes the POPULAR ordering itself, in the statement that moves the
-- product view's stock and popularity (read-models/src/projections/product_view.rs):
-- it copies the view's popularity of every product its batch touched, where it
-- differs. The statement-level trigger did the same through transition tables of whole
-- view rows and a join in PL/pgSQL: about 0.6 ms of each product-view batch under
-- checkout, 43% of that projector backend's CPU.
-- A projector of the previous version still running during a rolling upgrade moves the
-- view's popularity without the ordering table; the next batch of this version that
-- touches such a product (any stock change or order) copies the value across. New
-- products still get their ordering row from the insert trigger, whoever inserts them.
DROP TRIGGER rm_product_popularity_on_update ON rm_product_view;
DROP FUNCTION rm_product_popularity_follow_updates();
