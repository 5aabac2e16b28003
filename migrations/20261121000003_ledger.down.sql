DROP TABLE entries;
DROP TABLE transfers;
DROP TABLE accounts;
DROP TABLE currencies;
