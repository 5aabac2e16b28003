DROP TABLE mail_dead_letters;
DROP TABLE mail_outbox;
DROP TABLE email_verifications;
