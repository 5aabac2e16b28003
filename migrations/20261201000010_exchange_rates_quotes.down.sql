-- No exchange: rates and quotes go.
UPDATE roles SET permissions = array_remove(permissions, 'rates.manage')
    WHERE name IN ('banker', 'admin');
UPDATE roles SET description = 'Reads every account and transfer, deposits, withdraws, opens, '
    'limits and closes accounts and moves money for anyone.' WHERE name = 'banker';
DROP TABLE quotes;
DROP TABLE exchange_rates;
DROP SEQUENCE exchange_rates_version;
