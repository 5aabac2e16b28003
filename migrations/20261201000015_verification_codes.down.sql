-- Only the code of the mail whose transaction committed works again.
DROP TABLE verification_codes;
